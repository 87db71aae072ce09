"""Lowering a page plan with TVM and building it: `lower`, `build`, `Library`, CUDA and
MetaSchedule tuning."""
