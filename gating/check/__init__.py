"""`gating check`, the Action's build step: context, run loop, output, posting, eval notes, the fork pattern."""
