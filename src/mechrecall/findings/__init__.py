"""One module per analysis of the study; each declares ``ANALYSIS`` (see ``mechrecall.analysis``).

``mechrecall.registry`` lists them in the order they run; add a module here and a line there.
"""
