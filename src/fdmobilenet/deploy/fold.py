"""BatchNorm folding: every deployment format (and bench's ``torch`` backend) runs a conv/ReLU-only graph."""

from __future__ import annotations

import copy

from torch import nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm2d folded into the conv before it.

    In every network here a BatchNorm is registered right after the conv whose output it
    normalises (``ConvBNReLU``, the ShuffleNet unit's compress/bn1, depthwise/bn2, expand/bn3), so
    pairs are found by registration order; a BatchNorm left over means a model this rule does not
    fit, which is an error rather than a silently unfolded graph. The exporters compare the folded
    model's outputs with the original's, so a wrong pairing cannot go unnoticed either.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm layers {left[:4]}: each must directly follow its Conv2d")
    return model
