"""What a user runs: the `wvirt` CLI, the demo, the switch benchmark, figures, the bundled
suite and example models."""
