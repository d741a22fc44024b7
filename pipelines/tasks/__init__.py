"""Task families: how rows become model requests and answers become output columns."""
