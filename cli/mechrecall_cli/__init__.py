"""The ``mechrecall`` command line: one thin command per library entry point."""
