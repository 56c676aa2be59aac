"""The two-stage method, one file per step: source -> coarse (stage 1) -> scores -> selection ->
refine (stage 2) -> merge, run by ``loop``; ``cost`` counts what it spent, ``settings`` holds the options."""
