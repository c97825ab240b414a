"""MIMO-UNet and MIMO-UNet+ (Cho et al., "Rethinking Coarse-to-Fine Approach in Single Image
Deblurring", ICCV 2021). Faithful to chosj95/MIMO-UNet ``models/MIMOUNet.py`` and ``layers.py``.

One U-Net with three encoder scales (32/64/128 channels) that also takes y down 2 and y down 4
through shallow conv modules (SCM) merged by feature attention modules (FAM), asymmetric feature
fusion (AFF) of all encoder scales into the decoder skips, and three outputs at 1/4, 1/2 and 1
scale, each a residual on the correspondingly resized input. MIMO-UNet+ has 20 residual blocks
per E/DBlock instead of 8, and Dropout2d(0.1) on the AFF outputs.

``prior_dim > 0`` adds BlurDM's prior fusion (per-channel scale and shift) at the input of each
decoder block, as in BlurDM's ``MIMOUNetPlusPrior``. Images are (B, 3, H, W) float in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PriorFusion, pad_to_multiple
from .hparams import HyperParameters
from .protocol import restore_options


class BasicConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, relu: bool = True,
                 transpose: bool = False) -> None:
        if transpose:
            conv = nn.ConvTranspose2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2 - 1)
        else:
            conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2)
        super().__init__(conv, nn.ReLU(inplace=True)) if relu else super().__init__(conv)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.main = nn.Sequential(BasicConv(c, c, 3), BasicConv(c, c, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x


def res_stack(c: int, num_res: int) -> nn.Sequential:
    """EBlock / DBlock of the paper: ``num_res`` residual blocks at width c."""
    return nn.Sequential(*[ResBlock(c) for _ in range(num_res)])


class AFF(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(BasicConv(cin, cout, 1), BasicConv(cout, cout, 3, relu=False))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x1, x2, x4], dim=1))


class SCM(nn.Module):
    def __init__(self, out_plane: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            BasicConv(3, out_plane // 4, 3), BasicConv(out_plane // 4, out_plane // 2, 1),
            BasicConv(out_plane // 2, out_plane // 2, 3), BasicConv(out_plane // 2, out_plane - 3, 1),
        )
        self.conv = BasicConv(out_plane, out_plane, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, self.main(x)], dim=1))


class FAM(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.merge = BasicConv(c, c, 3, relu=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return x1 + self.merge(x1 * x2)


class MIMOUNet(HyperParameters, nn.Module):
    """forward(x, prior=None) -> finest output; forward_multiscale -> [1/4, 1/2, 1] outputs."""

    size_multiple = 8

    def __init__(self, num_res: int = 8, base_channel: int = 32, dropout: float = 0.0,
                 prior_dim: int = 0) -> None:
        super().__init__()
        b = base_channel
        self.Encoder = nn.ModuleList([res_stack(b, num_res), res_stack(2 * b, num_res), res_stack(4 * b, num_res)])
        self.feat_extract = nn.ModuleList([
            BasicConv(3, b, 3), BasicConv(b, 2 * b, 3, stride=2), BasicConv(2 * b, 4 * b, 3, stride=2),
            BasicConv(4 * b, 2 * b, 4, stride=2, transpose=True), BasicConv(2 * b, b, 4, stride=2, transpose=True),
            BasicConv(b, 3, 3, relu=False),
        ])
        self.Decoder = nn.ModuleList([res_stack(4 * b, num_res), res_stack(2 * b, num_res), res_stack(b, num_res)])
        self.Convs = nn.ModuleList([BasicConv(4 * b, 2 * b, 1), BasicConv(2 * b, b, 1)])
        self.ConvsOut = nn.ModuleList([BasicConv(4 * b, 3, 3, relu=False), BasicConv(2 * b, 3, 3, relu=False)])
        self.AFFs = nn.ModuleList([AFF(7 * b, b), AFF(7 * b, 2 * b)])
        self.FAM1, self.SCM1 = FAM(4 * b), SCM(4 * b)
        self.FAM2, self.SCM2 = FAM(2 * b), SCM(2 * b)
        self.drop1 = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.drop2 = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.prior_dim = prior_dim
        self.fusions = nn.ModuleList([PriorFusion(prior_dim, c) for c in (4 * b, 2 * b, b)]) if prior_dim > 0 else None

    def _fuse(self, i: int, z: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        return self.fusions[i](z, prior) if self.fusions is not None else z

    def forward_multiscale(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> list[torch.Tensor]:
        """x: (B, 3, H, W) with H, W multiples of 4 -> [(B,3,H/4,W/4), (B,3,H/2,W/2), (B,3,H,W)]."""
        x_2 = F.interpolate(x, scale_factor=0.5)
        x_4 = F.interpolate(x_2, scale_factor=0.5)
        z2, z4 = self.SCM2(x_2), self.SCM1(x_4)
        res1 = self.Encoder[0](self.feat_extract[0](x))
        z = self.FAM2(self.feat_extract[1](res1), z2)
        res2 = self.Encoder[1](z)
        z = self.FAM1(self.feat_extract[2](res2), z4)
        z = self.Encoder[2](z)
        z12 = F.interpolate(res1, scale_factor=0.5)
        z21 = F.interpolate(res2, scale_factor=2)
        z42 = F.interpolate(z, scale_factor=2)
        z41 = F.interpolate(z42, scale_factor=2)
        res2 = self.drop1(self.AFFs[1](z12, res2, z42))
        res1 = self.drop2(self.AFFs[0](res1, z21, z41))
        outputs = []
        z = self.Decoder[0](self._fuse(0, z, prior))
        outputs.append(self.ConvsOut[0](z) + x_4)
        z = self.Convs[0](torch.cat([self.feat_extract[3](z), res2], dim=1))
        z = self.Decoder[1](self._fuse(1, z, prior))
        outputs.append(self.ConvsOut[1](z) + x_2)
        z = self.Convs[1](torch.cat([self.feat_extract[4](z), res1], dim=1))
        z = self.Decoder[2](self._fuse(2, z, prior))
        outputs.append(self.feat_extract[5](z) + x)
        return outputs

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        padded, h, w = pad_to_multiple(x, self.size_multiple)
        return self.forward_multiscale(padded, prior)[-1][:, :, :h, :w]

    @restore_options
    def restore(self, blur: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (+ optional prior (B, D)) -> restored (B, 3, H, W) in [0, 1]."""
        return self.forward(blur, prior).clamp(0, 1)
