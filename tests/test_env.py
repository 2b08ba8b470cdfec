"""One parser for every CUTLASS_ROUTER_* switch: the same words mean the same thing everywhere."""
import logging

import pytest
import torch

from cutlass_router import RouterLinear, env


@pytest.mark.parametrize("word,value", [("1", True), ("true", True), ("YES", True), ("On", True),
                                        ("0", False), ("false", False), ("No", False), ("OFF", False), ("", False)])
@pytest.mark.parametrize("name", [env.DISABLE, env.PDL, env.BATCH_INVARIANT])
def test_switch_words(monkeypatch, name, word, value):
    monkeypatch.setenv(name, word)
    assert env.flag(name) is value


@pytest.mark.parametrize("name", [env.DISABLE, env.PDL, env.BATCH_INVARIANT])
def test_unknown_word_warns_once_and_keeps_the_default(monkeypatch, caplog, name):
    env._warn.cache_clear()
    monkeypatch.setenv(name, "maybe")
    with caplog.at_level(logging.WARNING, logger="cutlass_router"):
        assert env.flag(name) is env.DEFAULTS[name]
        assert env.flag(name) is env.DEFAULTS[name]
    assert caplog.text.count("maybe") == 1 and name in caplog.text


def test_defaults_when_unset(monkeypatch):
    for name in (env.DISABLE, env.PDL, env.BATCH_INVARIANT):
        monkeypatch.delenv(name, raising=False)
    assert (env.flag(env.DISABLE), env.flag(env.PDL), env.flag(env.BATCH_INVARIANT)) == (False, False, False)


def test_the_words_reach_the_op(monkeypatch):
    """CUTLASS_ROUTER_BATCH_INVARIANT=no must not turn the mode on (it did before one parser)."""
    from cutlass_router import ops, plan

    seen = []
    real = plan.gemm
    monkeypatch.setattr(plan, "gemm", lambda *a: seen.append(a[-1]) or real(*a))
    x, w = torch.randn(3, 64).to(torch.bfloat16), torch.randn(16, 64).to(torch.bfloat16)
    for word, want in (("no", False), ("yes", True), ("off", False)):
        monkeypatch.setenv(env.BATCH_INVARIANT, word)
        ops.router_gemm(x, w)
        assert seen[-1] is want


def test_from_linear_keeps_requires_grad():
    lin = torch.nn.Linear(64, 16, dtype=torch.bfloat16)
    lin.requires_grad_(False)
    gate = RouterLinear.from_linear(lin)
    assert not gate.weight.requires_grad and not gate.bias.requires_grad
    lin.weight.requires_grad_(True)
    gate = RouterLinear.from_linear(lin)
    assert gate.weight.requires_grad and not gate.bias.requires_grad


def test_setting_is_none_where_the_switch_is_not_set(monkeypatch, caplog):
    """env.setting: what the variable says, None where it says nothing (unset, or a word that is no switch value);
    route takes its tuned default then (dispatch.RouteRung.pdl)."""
    env._warn.cache_clear()
    monkeypatch.delenv(env.PDL, raising=False)
    assert env.setting(env.PDL) is None
    monkeypatch.setenv(env.PDL, "No")
    assert env.setting(env.PDL) is False
    monkeypatch.setenv(env.PDL, "on")
    assert env.setting(env.PDL) is True
    monkeypatch.setenv(env.PDL, "perhaps")
    with caplog.at_level(logging.WARNING, logger="cutlass_router"):
        assert env.setting(env.PDL) is None
    assert "perhaps" in caplog.text and "tuned table" in caplog.text
