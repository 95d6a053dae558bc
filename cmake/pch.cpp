// Anchors the shared precompiled header (torch/torch.h) of the dev targets.
