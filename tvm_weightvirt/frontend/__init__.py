"""Models in, packs out: intake of ONNX / torch / Relax models as tasks, their torch twins,
`wv.pack` on them, and the .wvpack artifact."""
