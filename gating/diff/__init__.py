"""The semantic diff of two snapshots: changes, their risks, the gates they touch, dataset case changes."""
