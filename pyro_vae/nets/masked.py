r"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks" and "Conditional
Image Generation with PixelCNN Decoders"): masked convolutions whose output at pixel i
depends only on the pixels before i in raster order, gated layers, conditioning on a code.

* :class:`MaskedConv2d`: a convolution whose kernel is zero at and after its centre in
  raster order (mask ``"A"``, the first layer: pixel i never sees itself) or after its
  centre (mask ``"B"``, every later layer: the features at i already exclude pixel i).
  The channels of one pixel are treated as one unit: they are predicted together, each
  independent of the others given the pixels before (for the single-channel images here
  that is no restriction).
* :class:`GatedLayer`: ``x + W_o * (tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h))``, the
  gated activation with the conditioning term ``V h``: a per-layer vector of the code
  (global conditioning), or a 1x1 convolution of a spatial map computed from the code
  once (location-dependent conditioning).
* :class:`PixelCNN`: mask-A 7x7 convolution, ``layers`` gated mask-B layers, two 1x1
  convolutions to one logit per pixel and channel: ``p(x|h) = Π_i Bernoulli(x_i | σ(l_i(x_{<i}, h)))``.
  :meth:`PixelCNN.log_prob` is exact, one pass; :meth:`PixelCNN.sample` draws pixel by
  pixel.

**Sampling cost.** A pass at pixel (r, c) needs only the ``R`` rows above it (``R`` the
stack's receptive height: 3 for the 7x7 layer plus 1 per 3x3 layer), so each pass runs on
the strip of rows ``r − R .. r`` instead of the whole image (exact: every feature the
output at row r reads lies inside the strip's valid part), and the conditioning terms
``V h`` are computed once per sample batch, not once per pixel. For 28x28 with 5 gated
layers that is 9 rows of 28 per pass instead of 28.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.nets.bodies import decoder_body
from pyro_vae.nets.shapes import EventShape, as_event_shape

CONDITIONINGS = ("global", "local")
FIRST_KERNEL = 7


def raster_mask(kernel: int, mask_type: str) -> torch.Tensor:
    """``(kernel, kernel)`` of 0/1: 1 for the kernel positions before the centre in raster
    order, and the centre itself for ``mask_type = "B"``."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be \"A\" or \"B\", got {mask_type!r}")
    if kernel % 2 != 1:
        raise ValueError(f"a masked convolution needs an odd kernel (a centre), got {kernel}")
    mask = torch.zeros(kernel, kernel)  # cpu-ok: becomes a buffer that follows its module
    c = kernel // 2
    mask[:c] = 1
    mask[c, :c + (mask_type == "B")] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, 'same' zero padding) with its kernel masked by :func:`raster_mask`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, mask_type: str):
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        self.register_buffer("mask", raster_mask(kernel, mask_type), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class GatedLayer(nn.Module):
    """One residual gated mask-B layer; ``cond`` is ``(B, 2C)`` (global) or ``(B, 2C, H, W)``."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.conv = MaskedConv2d(channels, 2 * channels, kernel, "B")
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        a = a + (cond[..., None, None] if cond.dim() == 2 else cond)
        f, g = a.chunk(2, dim=1)
        return x + self.out(torch.tanh(f) * torch.sigmoid(g))


class PixelCNN(nn.Module):
    """``p(x | h)`` over binary images ``x: (B, C, H, W)`` given a code ``h: (B, cond_dim)``.

    Args:
        event_shape: ``(C, H, W)``.
        cond_dim: the code's size.
        channels: feature channels of every layer.
        layers: gated mask-B layers after the mask-A input layer.
        kernel: their (odd) kernel size.
        conditioning: ``"global"`` (a vector per layer) or ``"local"`` (a spatial map
            decoded from the code once, ``cond_channels`` channels, projected per layer).
    """

    def __init__(self, event_shape: EventShape, cond_dim: int, channels: int = 64, layers: int = 5,
                 kernel: int = 3, conditioning: str = "global", cond_channels: int = 16):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        if len(self.event_shape) != 3:
            raise ValueError(f"a PixelCNN models images (C, H, W), got event shape {self.event_shape}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}: choose one of {list(CONDITIONINGS)}")
        if layers < 1 or channels < 1:
            raise ValueError(f"a PixelCNN needs layers >= 1 and channels >= 1, got {layers} and {channels}")
        c_in = self.event_shape[0]
        self.conditioning = conditioning
        self.input = MaskedConv2d(c_in, channels, FIRST_KERNEL, "A")
        self.layers = nn.ModuleList(GatedLayer(channels, kernel) for _ in range(layers))
        if conditioning == "global":
            self.cond = nn.Linear(cond_dim, 2 * channels * layers)
        else:
            self.spatial = decoder_body(cond_dim, (cond_channels, *self.event_shape[1:]), [128], "relu")
            self.cond = nn.Conv2d(cond_channels, 2 * channels * layers, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, c_in, 1))
        #: Rows above a pixel that its logit depends on.
        self.receptive_rows = FIRST_KERNEL // 2 + layers * (kernel // 2)

    def conditions(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's conditioning term for the code ``h (B, cond_dim)``: ``(B, 2C)`` or
        ``(B, 2C, H, W)``; computed once per code (what sampling caches)."""
        if self.conditioning == "global":
            return list(self.cond(h).chunk(len(self.layers), dim=-1))
        return list(self.cond(torch.relu(self.spatial(h))).chunk(len(self.layers), dim=1))

    def logits(self, x: torch.Tensor, h: torch.Tensor, conds: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """``(B, C, H', W)`` logits of ``x (B, C, H', W)`` (H' <= H rows: a strip, with
        ``conds`` cut to the same rows) given the code ``h``."""
        conds = self.conditions(h) if conds is None else conds
        a = self.input(x)
        for layer, cond in zip(self.layers, conds):
            a = layer(a, cond)
        return self.head(a)

    def log_prob(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x|h)`` per image, ``(B,)``: ``Σ_i x_i l_i − softplus(l_i)``."""
        logits = self.logits(x, h)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, h: torch.Tensor, generator: Optional[torch.Generator] = None,
               probabilities: bool = False) -> torch.Tensor:
        """``x ~ p(x|h)``, ``(B, C, H, W)``, pixel by pixel in raster order (module docstring:
        strips of rows, conditioning computed once). ``probabilities``: also return the
        Bernoulli probability each pixel was drawn with."""
        B = len(h)
        C, H, W = self.event_shape
        x = h.new_zeros(B, C, H, W)
        probs = h.new_zeros(B, C, H, W)
        conds = self.conditions(h)
        for r in range(H):
            top = max(0, r - self.receptive_rows)
            strip = [c if c.dim() == 2 else c[:, :, top:r + 1] for c in conds]
            for col in range(W):
                p = torch.sigmoid(self.logits(x[:, :, top:r + 1], h, strip)[:, :, -1, col])
                u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                x[:, :, r, col] = (u < p).to(x.dtype)
                probs[:, :, r, col] = p
        return (x, probs) if probabilities else x


__all__ = ["CONDITIONINGS", "GatedLayer", "MaskedConv2d", "PixelCNN", "raster_mask"]
