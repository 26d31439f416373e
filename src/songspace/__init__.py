"""songspace: a learned metric space for music, so that songs that sound alike lie close."""

__version__ = "0.1.0"
from songspace.library_api import Library  # noqa: E402,F401  (torch and faiss load on first use)
