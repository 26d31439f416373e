"""songspace: a learned metric space for music, so that songs that sound alike lie close."""

__version__ = "0.1.0"
