"""How the shipped "minilm" judge is made: `safecls judge <sub-command>` (commands.py) runs these steps.

One job per module, in the order they run:

- `generate`: replies to label by hand (the base model's and fine-tuned checkpoints', to training prompts and to the
  fixture's prompts); `styles` asks safety-sft topics the way the evaluation sets ask.
- `sources`: where the labelled data lives (the packaged hand labels, the fixture and its dev / held-out split, the
  shared data) and the guard that keeps held-out rows out of every choice.
- `builder`: the training set (replies read by hand and rows labelled by construction), minus every copy of a held-out
  row (`overlap`).
- `fit`: fine-tune MiniLM (LoRA) and the head; `calibrate`: logit offsets chosen on dev.
- `evaluate`: agreement of each judge with the labels, the held-out numbers reports show (`validation.json`), and the
  training rows the judge fits worst (`suspects`).
"""
