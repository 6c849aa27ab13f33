"""s2v-nano: the method in a miniature world of procedurally drawn subjects, small enough to train on a CPU.

`world` draws identities (shape x colour x pattern x accent), scenes and motions and writes the
training and evaluation sets; `analyze` reads any such frame back into those attributes, so
generated videos are scored against known ground truth. `vae` and `base` define and train the
stand-in for pretrained CogVideoX, `evaluate` is `s2v-nano eval`, and `build` is the
one command that rebuilds everything (`s2v-nano build`). It builds on `s2v` and `s2v_train/`;
neither imports it.
"""
