"""The algorithms on page plans: importance, matching, retraining, separation, SmartDeal, the
packing pipeline and what it trains with (objectives, data, the training loop). Never TVM."""
