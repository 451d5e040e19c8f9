"""Training datasets of every task, indexed by (index, seed) sample keys."""
