"""Toy experiments of the paper's appendices: planted shared subspaces (Appendix 6, 7)."""
