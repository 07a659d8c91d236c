"""The tokenizer's losses, on small randomly initialised backbones."""
import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from eqgen.configs import from_preset
from eqgen.errors import EqgenError
from eqgen.losses import (LPIPS, PatchDiscriminator, TokenizerLoss, TokenizerLossConfig, adaptive_weight,
                          hinge_discriminator_loss, hinge_generator_loss, load_vision_encoder, semantic_alignment)
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig

SMALL = (4, 8, 8, 16, 16)


def images(n=4, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth random images: a coarse grid upsampled, so that distortions are not drowned in the content
    return torch.nn.functional.interpolate(torch.rand(n, 3, 4, width // 8, generator=g) * 2 - 1, size=(32, width),
                                           mode="bilinear", align_corners=False)


@torch.no_grad()
def test_lpips_is_zero_for_identical_images_and_grows_with_distortion():
    torch.manual_seed(0)
    lpips = LPIPS(widths=SMALL)
    x = images()
    assert lpips(x, x).shape == (4,)
    assert torch.equal(lpips(x, x), torch.zeros(4))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    distances = [lpips(x, x + s * noise).mean().item() for s in (0.02, 0.1, 0.3, 1.0)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    torch.testing.assert_close(lpips(x, x + noise), lpips(x + noise, x))  # symmetric


def test_lpips_has_no_trainable_parameters_but_passes_gradients():
    lpips = LPIPS(widths=SMALL)
    assert not any(p.requires_grad for p in lpips.parameters())
    recon = images(seed=3).requires_grad_(True)
    lpips(recon, images()).sum().backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_lpips_loads_torchvision_and_lpips_key_names(tmp_path):
    """torchvision's vgg16 state dict (features.N, classifier.N) in a .pth, the LPIPS heads in a safetensors."""
    torch.manual_seed(0)
    source = LPIPS(widths=SMALL)
    vgg = {k: torch.randn(v.shape) for k, v in source.features.state_dict().items()}
    torch.save({**{f"features.{k}": v for k, v in vgg.items()}, "classifier.0.weight": torch.zeros(2, 2)},
               tmp_path / "vgg16.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1) for i, w in enumerate(SMALL)}
    save_file(heads, tmp_path / "lpips_vgg.safetensors")
    lpips = LPIPS.from_files(tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.safetensors")
    assert torch.equal(lpips.features[0].weight, vgg["0.weight"])
    assert torch.equal(lpips.features[28].weight, vgg["28.weight"])  # relu5_3's conv, as in torchvision
    assert torch.equal(lpips.lins[4].weight, heads["lin4.model.1.weight"])
    with pytest.raises(EqgenError, match="no LPIPS heads"):
        LPIPS.from_files(tmp_path / "vgg16.pth")
    torch.save({"model": object()}, tmp_path / "pickled.pth")
    with pytest.raises(EqgenError, match="not a tensors-only weights file"):
        LPIPS.from_files(tmp_path / "pickled.pth")


def test_patch_discriminator_gives_one_logit_per_patch():
    logits = PatchDiscriminator(channels=8, layers=3)(images(2, 64))
    assert logits.shape == (2, 1, 2, 6)  # 32 px: /2 /2 /2, then two 4×4 convs with stride 1 (−1 each)


def test_hinge_losses_have_the_right_signs():
    sure = hinge_discriminator_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))
    assert sure.item() == 0.0  # real ≥ 1 and fake ≤ −1: nothing to learn
    real, fake = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    hinge_discriminator_loss(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()  # descent raises real logits, lowers fake ones
    fake = torch.zeros(4, requires_grad=True)
    hinge_generator_loss(fake).backward()
    assert (fake.grad < 0).all()  # the tokenizer wants its reconstructions called real


def test_adaptive_weight_matches_a_manual_computation():
    torch.manual_seed(0)
    last = nn.Conv2d(4, 3, 3, padding=1)
    h = torch.randn(2, 4, 8, 8)
    out = last(h)
    target = torch.randn_like(out)
    nll = (out - target).abs().mean()
    g_loss = -PatchDiscriminator(channels=4, layers=1)(out).mean()
    weight = adaptive_weight(nll, g_loss, last.weight)
    grads = []
    for loss in (nll, g_loss):
        last.weight.grad = None
        loss.backward(retain_graph=True)
        grads.append(last.weight.grad.clone())
    torch.testing.assert_close(weight, grads[0].norm() / (grads[1].norm() + 1e-4))
    assert not weight.requires_grad
    flat = adaptive_weight(nll, out.sum() * 0.0, last.weight, max_weight=50.0)  # no adversarial gradient
    assert flat.item() == 50.0


def test_semantic_alignment_is_a_negative_cosine_on_the_same_grid():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 6, 4, 8, generator=g)
    torch.testing.assert_close(semantic_alignment(target * 3.0, target), torch.tensor(-1.0))  # scale-free
    torch.testing.assert_close(semantic_alignment(-target, target), torch.tensor(1.0))
    assert abs(semantic_alignment(torch.randn(2, 6, 4, 8, generator=g), target).item()) < 0.2
    # An encoder grid twice as fine is averaged down to the semantic output's grid.
    fine = target.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(semantic_alignment(target, fine), torch.tensor(-1.0))
    with pytest.raises(EqgenError, match="semantic_dim to 6"):
        semantic_alignment(torch.randn(2, 5, 4, 8), target)


def test_vision_encoder_loads_from_an_exported_program(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.GELU()).eval()
    x = images(2)
    dims = {0: torch.export.Dim("batch"), 3: 4 * torch.export.Dim("columns", min=2, max=1024)}
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=(dims,)), tmp_path / "encoder.pt2")
    encoder = load_vision_encoder(tmp_path / "encoder.pt2")
    wide = images(3, 64)
    torch.testing.assert_close(encoder(wide), net(wide))
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(EqgenError, match="not found"):
        load_vision_encoder(tmp_path / "missing.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(EqgenError, match="not a torch.export archive"):
        load_vision_encoder(tmp_path / "junk.pt2")


# ---------------------------------------------------------------------------------------------------------
# The combined loss


def tiny_tokenizer(**overrides):
    torch.manual_seed(0)
    return ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny", **overrides))


def run(loss: TokenizerLoss, tokenizer, x, step):
    recon, moments, semantic = tokenizer(x, generator=torch.Generator().manual_seed(0))
    return loss.autoencoder_loss(x, recon, tokenizer.regularization(moments), semantic, step,
                                 tokenizer.decoder.conv_out.weight)


def test_losses_without_backbones_are_off_and_say_so_once(caplog):
    with caplog.at_level(logging.WARNING, logger="eqgen"):
        loss = TokenizerLoss(TokenizerLossConfig())
    assert loss.lpips is None and loss.vision_encoder is None and loss.discriminator is not None
    assert sum("perceptual loss off" in r.message for r in caplog.records) == 1
    assert sum("semantic alignment off" in r.message for r in caplog.records) == 1
    off = TokenizerLoss(TokenizerLossConfig(perceptual_weight=0, adversarial_weight=0, semantic_weight=0))
    assert off.lpips is None and off.discriminator is None and off.vision_encoder is None


def test_pixel_and_regularization_terms():
    tokenizer, x = tiny_tokenizer(), images(2, 16)[:, :, :16]
    config = TokenizerLossConfig(perceptual_weight=0, adversarial_weight=0, semantic_weight=0,
                                 regularization_weight=0.5)
    total, parts = run(TokenizerLoss(config), tokenizer, x, step=0)
    recon, moments, _ = tokenizer(x, generator=torch.Generator().manual_seed(0))
    pixel = (recon - x).abs().mean()
    reg = 0.5 * moments.pow(2).sum(dim=(1, 2)).mean() / (3 * 16 * 16)  # per pixel value, as the official sums
    torch.testing.assert_close(total, pixel + 0.5 * reg)
    assert set(parts) == {"pixel_l1", "regularization"}


def test_each_term_switches_on_at_its_step():
    tokenizer, x = tiny_tokenizer(), images(2, 16)[:, :, :16]
    encoder = nn.Conv2d(3, 8, 4, stride=4).requires_grad_(False)   # a "vision encoder" on the 4×4 latent grid
    config = TokenizerLossConfig(adversarial_start=10, semantic_start=20, discriminator_channels=8,
                                 discriminator_layers=1)
    loss = TokenizerLoss(config, lpips=LPIPS(widths=SMALL), vision_encoder=encoder)
    assert set(run(loss, tokenizer, x, 0)[1]) == {"pixel_l1", "perceptual", "regularization"}
    assert set(run(loss, tokenizer, x, 10)[1]) >= {"adversarial", "adaptive_weight"}
    total, parts = run(loss, tokenizer, x, 20)
    assert "semantic" in parts and -1 <= parts["semantic"] <= 1
    total.backward()
    assert tokenizer.semantic_decoder.conv_out.weight.grad.abs().sum() > 0   # alignment trains the projection
    assert all(p.grad is None for p in loss.discriminator.parameters())      # and never the discriminator
    assert all(p.requires_grad for p in loss.discriminator.parameters())


def test_discriminator_loss_trains_only_the_discriminator():
    tokenizer, x = tiny_tokenizer(), images(2, 16)[:, :, :16]
    loss = TokenizerLoss(TokenizerLossConfig(perceptual_weight=0, semantic_weight=0, discriminator_channels=8,
                                             discriminator_layers=1))
    recon, _, _ = tokenizer(x)
    d_loss = loss.discriminator_loss(x, recon)
    assert d_loss.item() > 0
    d_loss.backward()
    assert all(p.grad is None for p in tokenizer.parameters())
    assert loss.discriminator.main[0].weight.grad.abs().sum() > 0


def test_alignment_needs_a_semantic_decoder():
    tokenizer, x = tiny_tokenizer(semantic_widths=()), images(2, 16)[:, :, :16]
    loss = TokenizerLoss(TokenizerLossConfig(perceptual_weight=0, adversarial_weight=0, semantic_start=0),
                         vision_encoder=nn.Conv2d(3, 8, 4, stride=4))
    with pytest.raises(EqgenError, match="semantic decoder"):
        run(loss, tokenizer, x, 0)
