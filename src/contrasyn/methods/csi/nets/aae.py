"""The adversarial autoencoder's other two networks: the encoder E (G's mirror) and the latent
discriminator D' (docs/METHOD.md, "Notation")."""

from __future__ import annotations

from torch import Tensor, nn

from contrasyn.methods.csi.nets.sngan import stage_channels


class Encoder(nn.Module):
    """[0, 1] image -> conv 3x3 w -> [conv 4x4 s2 (BN, leaky ReLU 0.2)] x stages, doubling the
    channels down to 4x4x8w -> dense -> h in R^latent: G's stages in reverse."""

    def __init__(
        self, latent_dim: int = 128, channels: int = 3, image_size: int = 32, width: int = 64
    ) -> None:
        super().__init__()
        chans = stage_channels(image_size, width)[::-1]  # w, 2w, 4w, 8w at 32x32
        layers: list[nn.Module] = [
            nn.Conv2d(channels, chans[0], 3, padding=1),
            nn.BatchNorm2d(chans[0]),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in zip(chans, chans[1:], strict=False):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        self.dense = nn.Linear(4 * 4 * chans[-1], latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(self.body((x - 0.5) / 0.5))


class LatentDiscriminator(nn.Module):
    """D': latent -> 512 -> 512 -> 1 logit, leaky ReLU 0.2; tells N(0, I) draws from E(x)."""

    def __init__(self, latent_dim: int = 128, hidden: int = 512) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.body(h).squeeze(1)
