"""s2v-nano: the method in a miniature world of procedurally drawn subjects, small enough to train on a CPU.

`world` draws identities (shape x colour x pattern x accent), scenes and motions and writes the
training and evaluation sets; `analyze` reads any such frame back into those attributes, so
generated videos are scored against known ground truth. `vae` and `base` define and train the
stand-in for pretrained CogVideoX, `evaluate` is `python -m nano eval`, and `build` is the
one command that rebuilds everything (`python -m nano build`). It builds on `s2v` and `train/`;
neither imports it.
"""
