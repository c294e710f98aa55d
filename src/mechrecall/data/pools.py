"""Fixed value pools of the synthetic world.

The pools are constants, not drawn from a seed, so every world (any seed, any population) lives
in one vocabulary: a base model pre-trained on one population can be fine-tuned on a disjoint
one with the same word-level tokenizer.
"""

from __future__ import annotations

FIRST_NAMES_MALE = """
Aaron Adrian Alan Albert Andre Arthur Benjamin Bernard Calvin Carl Cedric Clifford Colin Damian
Daniel Dennis Derek Douglas Edgar Edmund Elliot Emil Felix Floyd Gavin Gilbert Gordon Harold
Hector Henry Howard Ivan Jasper Jerome Julian Kenneth Lance Leon Lionel Marcus Martin Milton
Nathan Neil Oliver Oscar Patrick Quentin Raymond Roland Rupert Samuel Silas Stanley Theodore
Tobias Victor Walter Wesley
""".split()

FIRST_NAMES_FEMALE = """
Abigail Adele Agnes Alice Amelia Annette Beatrice Bianca Camille Carla Celia Clara Daphne Delia
Diana Edith Eleanor Elise Emma Esther Fiona Flora Gemma Georgia Gloria Hazel Helena Iris Irene
Isabel Joanna Judith Julia Karen Laura Leah Lillian Lucia Mabel Margot Marion Maya Miriam Nadia
Naomi Nora Olive Paula Pearl Rachel Rosa Ruth Sabrina Selma Sylvia Tessa Ursula Vera Wendy
""".split()

MIDDLE_NAMES = """
Abel Alden Arden Avery Blair Brook Carey Casey Dale Dana Darcy Drew Eden Ellis Emery Evan Finley
Flynn Gale Glenn Hayden Hollis Jamie Jordan Jules Kelsey Kendall Lane Lee Lindsay Logan Lynn
Marley Morgan Noel Parker Perry Quinn Reese Riley Robin Rowan Sage Shannon Shelby Sidney Skyler
Stacy Sterling Taylor Terry Tracy Tyler Vale Wren Wynn Yael Blake Emerson Jody
""".split()

LAST_NAMES = """
Abbott Ainsworth Alcott Ashford Barlow Beckett Bellamy Blackwood Bramley Brennan Calloway Carver
Chandler Cromwell Dalton Davenport Delaney Dempsey Donovan Draper Ellington Emerson Fairbanks
Falkner Fenwick Fletcher Forsyth Galloway Garrison Gilmore Goodwin Granger Hadley Halloway
Hampton Harper Hastings Hawthorne Holloway Huxley Ingram Jarvis Keating Kendrick Kingsley Lambert
Langley Lawson Lockwood Lowell Maddox Mallory Merriweather Montague Morrison Nash Norwood Oakley
Osborne Pemberton Prescott Quincy Radcliffe Ramsey Redford Rockwell Ruskin Sawyer Sheffield
Sinclair Stafford Sterling Thatcher Thornton Underwood Vance Wakefield Waverly Whitaker Winslow
Wolcott Yardley Ashby Bancroft Blythe Burgess Carrington Chamberlain Colby Crawford Dunmore
Easton Finch Gresham Harlow Kimball Linwood Marlowe Mercer Northcott Pickering Rowley Selwyn
Talbot Thorne Vaughn Westbrook Whitfield Wyatt Ainsley Barrington Caldwell Drummond Everett
Halston Kensington Lindqvist Ogden Penrose Rutherford Stanhope Tennyson
""".split()

CITIES = """
Atlanta|Austin|Baltimore|Boston|Charlotte|Chicago|Cincinnati|Cleveland|Columbus|Dallas|Denver|
Detroit|El Paso|Fresno|Honolulu|Houston|Indianapolis|Jacksonville|Kansas City|Las Vegas|
Los Angeles|Louisville|Memphis|Miami|Milwaukee|Minneapolis|Nashville|New Orleans|New York|
Oakland|Oklahoma City|Omaha|Orlando|Philadelphia|Phoenix|Pittsburgh|Portland|Raleigh|Richmond|
Sacramento|Salt Lake City|San Antonio|San Diego|San Francisco|San Jose|Seattle|St. Louis|Tampa|
Tucson|Tulsa|Albuquerque|Anchorage|Boise|Buffalo|Burlington|Charleston|Des Moines|Hartford|
Madison|Providence|Reno|Rochester|Santa Fe|Savannah|Spokane|Wichita
""".replace("\n", "").split("|")

UNIVERSITIES = """
Massachusetts Institute of Technology|Stanford University|Harvard University|Yale University|
Princeton University|Columbia University|Cornell University|Brown University|Duke University|
Rice University|Emory University|Tufts University|Vanderbilt University|Georgetown University|
Northwestern University|Johns Hopkins University|Carnegie Mellon University|Boston University|
New York University|Purdue University|Tulane University|Baylor University|Clemson University|
Auburn University|Temple University|Drexel University|Rutgers University|Syracuse University|
Fordham University|Villanova University|University of Michigan|University of Texas|
University of Florida|University of Georgia|University of Oregon|University of Arizona|
University of Utah|University of Iowa|University of Kansas|University of Virginia|
University of Washington|University of Colorado|University of Minnesota|University of Wisconsin|
University of Illinois|University of Chicago|University of Rochester|University of Maryland|
University of Kentucky|University of Vermont|Ohio State University|Penn State University|
Michigan State University|Arizona State University|Iowa State University|Oregon State University|
Florida State University|Kansas State University|Georgia Institute of Technology|
California Institute of Technology
""".replace("\n", "").split("|")

MAJORS = """
Accounting|Aerospace Engineering|Anthropology|Applied Mathematics|Architecture|Art History|
Astronomy|Biochemistry|Biology|Business Administration|Chemical Engineering|Chemistry|
Civil Engineering|Classics|Communications|Computer Science|Criminology|Dance|Economics|
Education|Electrical Engineering|English Literature|Environmental Science|Film Studies|Finance|
Geography|Geology|Graphic Design|History|Industrial Engineering|Journalism|Linguistics|
Marketing|Materials Science|Mathematics|Mechanical Engineering|Music|Neuroscience|Nursing|
Nutrition|Philosophy|Physics|Political Science|Psychology|Public Health|Sociology|Statistics|
Theater|Urban Planning|Zoology
""".replace("\n", "").split("|")

# Employers with the city of their headquarters: the employer fixes the employer's city.
EMPLOYERS: dict[str, str] = {
    "Meta Platforms": "Menlo Park",
    "Alphabet": "Mountain View",
    "Apple": "Cupertino",
    "Microsoft": "Redmond",
    "Amazon": "Seattle",
    "Nvidia": "Santa Clara",
    "Intel": "Santa Clara",
    "Oracle": "Austin",
    "Salesforce": "San Francisco",
    "Adobe": "San Jose",
    "Cisco Systems": "San Jose",
    "Qualcomm": "San Diego",
    "Dell Technologies": "Round Rock",
    "IBM": "Armonk",
    "General Electric": "Boston",
    "General Motors": "Detroit",
    "Ford Motor": "Dearborn",
    "Boeing": "Arlington",
    "Lockheed Martin": "Bethesda",
    "Raytheon": "Waltham",
    "Caterpillar": "Irving",
    "Deere": "Moline",
    "3M": "Saint Paul",
    "Honeywell": "Charlotte",
    "Johnson and Johnson": "New Brunswick",
    "Pfizer": "New York",
    "Merck": "Rahway",
    "Abbott Laboratories": "Abbott Park",
    "Eli Lilly": "Indianapolis",
    "Procter and Gamble": "Cincinnati",
    "Coca Cola": "Atlanta",
    "PepsiCo": "Purchase",
    "Walmart": "Bentonville",
    "Target": "Minneapolis",
    "Home Depot": "Atlanta",
    "Costco": "Issaquah",
    "Starbucks": "Seattle",
    "Nike": "Beaverton",
    "Walt Disney": "Burbank",
    "Netflix": "Los Gatos",
    "Comcast": "Philadelphia",
    "Verizon": "New York",
    "AT and T": "Dallas",
    "JPMorgan Chase": "New York",
    "Goldman Sachs": "New York",
    "Morgan Stanley": "New York",
    "Wells Fargo": "San Francisco",
    "Bank of America": "Charlotte",
    "Citigroup": "New York",
    "American Express": "New York",
    "Visa": "San Francisco",
    "Mastercard": "Purchase",
    "ExxonMobil": "Spring",
    "Chevron": "San Ramon",
    "UnitedHealth Group": "Minnetonka",
    "FedEx": "Memphis",
    "United Parcel Service": "Atlanta",
    "Delta Air Lines": "Atlanta",
    "Southwest Airlines": "Dallas",
    "Tesla": "Austin",
}

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
DAYS = list(range(1, 29))  # every month has them
YEARS = list(range(1950, 2006))

GENDERS = ("male", "female")
PRONOUNS = {"male": ("He", "His"), "female": ("She", "Her")}
