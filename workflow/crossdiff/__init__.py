"""crossdiff: does training on data of one difficulty help on data of another?

The package holds every piece of logic of the Snakemake workflow; each stage is a module
usable from Python and exposed as a subcommand of the ``crossdiff`` command line.
"""

__version__ = "0.1.0"
