"""Rollback: which state to go back to and the plan that restores it. Pure: readers and entries in, a plan out."""
