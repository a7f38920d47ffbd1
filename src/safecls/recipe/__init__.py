"""The recipe of the shipped defended model: source prompts, the base model's own answers, labels, the SFT mixture
and pretrain corpus, and the training chain. It sits above train/ and inference/ (it runs both)."""
