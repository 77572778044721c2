"""Settings, keys, admission math and the session state machine, without a server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from avatarfarm.server.auth import KeyRing, Principal
from avatarfarm.server.capacity import CostModel, CpuSampler, Profile
from avatarfarm.server.config import ConfigError, load_settings
from avatarfarm.server.drivers.udp import MIN_PAUSE_S, CpuBudget
from avatarfarm.server.sessions import (
    Session,
    SessionError,
    SessionSpec,
    SessionState,
    SessionTable,
)


def test_settings_precedence_file_env_overrides(tmp_path: Path):
    config = tmp_path / "avatarfarm.toml"
    keys = tmp_path / "keys"
    keys.write_text("# tenants\nt3:key-three-333  # the third\nt4:key#with#hashes\n")
    config.write_text(f'[server]\nport = 9000\ntenant_max_sessions = 3\nkeys_file = "{keys}"\n')
    env = {"AVATARFARM_PORT": "9100", "AVATARFARM_API_KEYS": "t1:key-one-111,t2:key-two-222"}
    settings = load_settings(config, env=env, device="cpu")
    assert (settings.port, settings.tenant_max_sessions, settings.device) == (9100, 3, "cpu")
    assert settings.all_api_keys() == {
        "t1": "key-one-111",
        "t2": "key-two-222",
        "t3": "key-three-333",
        "t4": "key#with#hashes",  # a # inside a key is part of it
    }


@pytest.mark.parametrize(
    "env",
    [
        {"AVATARFARM_API_KEYS": "t1"},
        {"AVATARFARM_API_KEYS": "t1:short"},
        {"AVATARFARM_PORT": "x"},
        {"AVATARFARM_X264_PRESET": "placebo"},
        {"AVATARFARM_MAX_LATENESS_MS": "-1"},
        {"AVATARFARM_MAX_LATENESS_MS": "nan"},
        {"AVATARFARM_MAX_LATENESS_MS": "1e9"},
    ],
)
def test_bad_settings_are_named(env):
    with pytest.raises(ConfigError, match=next(iter(env))[len("AVATARFARM_") :].lower()):
        load_settings(env=env)


def test_x264_preset_is_a_server_setting():
    assert load_settings(env={}).x264_preset == "veryfast"
    assert load_settings(env={"AVATARFARM_X264_PRESET": "ultrafast"}).x264_preset == "ultrafast"


def test_max_lateness_is_a_server_setting():
    assert load_settings(env={}).max_lateness_ms == 100.0
    assert load_settings(env={"AVATARFARM_MAX_LATENESS_MS": "0"}).max_lateness_ms == 0.0


def test_unknown_setting_in_file_is_an_error(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(config, env={})


def test_keyring_maps_keys_to_tenants_and_admin():
    ring = KeyRing({"t1": "key-one-111", "t2": "key-two-222"}, "key-admin-999")
    assert ring.generated is None
    assert ring.authenticate("Bearer key-one-111") == Principal("t1")
    assert ring.authenticate("bearer key-two-222") == Principal("t2")
    assert ring.authenticate("Bearer key-admin-999") == Principal("admin", admin=True)
    for header in (None, "", "Bearer", "Bearer key-one-11", "Basic key-one-111", "key-one-111"):
        assert ring.authenticate(header) is None


def test_keyring_generates_an_admin_key_when_none_configured():
    ring = KeyRing({}, None)
    assert ring.generated and len(ring.generated) >= 24
    principal = ring.authenticate(f"Bearer {ring.generated}")
    assert principal is not None and principal.admin


def test_cost_model_admits_until_budget_and_learns_from_ticks():
    cost = CostModel(0.010, budget=0.8, max_sessions=100)
    p720 = Profile(1280, 720, 30)  # 30 * 10 ms = 30 % of the engine each
    assert cost.room(p720, []) == 2
    assert cost.admit(p720, [p720, p720]).ok is False
    assert "budget" in cost.admit(p720, [p720, p720]).reason
    for _ in range(200):  # ticks take twice what was predicted
        cost.observe(render_seconds=0.020, mpix=p720.mpix, frames=1)
    assert cost.correction == pytest.approx(2.0, rel=0.01)
    assert cost.room(p720, []) == 1
    tiny = Profile(160, 120, 24)
    assert cost.room(tiny, []) > cost.room(p720, [])  # fewer pixels, cheaper frames
    assert CostModel(1e-6, 0.8, max_sessions=3).admit(tiny, [tiny] * 3).ok is False


def test_session_state_machine():
    s = Session("t1", SessionSpec())
    assert s.state is SessionState.STARTING
    with pytest.raises(SessionError):
        s.transition(SessionState.ENDED)
    s.transition(SessionState.LIVE)
    s.transition(SessionState.STANDBY)
    s.transition(SessionState.LIVE)
    s.fail("encoder died", "video")
    assert s.state is SessionState.FAILED and s.error["field"] == "video"
    with pytest.raises(SessionError):
        s.transition(SessionState.LIVE)


def test_session_table_quota_idempotency_and_isolation():
    table = SessionTable(tenant_quota=1)
    a = table.add(Session("t1", SessionSpec()), "k1", "body")
    assert table.idempotent("t1", "k1", "body") is a
    assert table.idempotent("t2", "k1", "body") is None  # keys are per tenant
    with pytest.raises(SessionError) as err:
        table.idempotent("t1", "k1", "other body")
    assert err.value.code == "conflict"
    twin = Session("t1", SessionSpec())  # a concurrent request with the key: same body
    assert table.add(twin, "k1", "body") is a
    with pytest.raises(SessionError) as err:  # ... a different body, past idempotent()
        table.add(Session("t1", SessionSpec()), "k1", "other body")
    assert err.value.code == "conflict"
    with pytest.raises(SessionError) as err:
        table.add(Session("t1", SessionSpec()), None, None)
    assert err.value.code == "quota"
    with pytest.raises(SessionError) as err:
        table.get(a.id, "t2")
    assert err.value.code == "not_found"
    assert table.get(a.id, None) is a  # the admin sees every tenant


def test_saturated_cpu_refuses_whatever_the_model_says():
    cost = CostModel(1e-6, budget=0.8, max_sessions=100)
    tiny = Profile(160, 120, 24)
    assert cost.admit(tiny, []).ok
    cost.observe_cpu(0.95)
    decision = cost.admit(tiny, [])
    assert not decision.ok and "CPU" in decision.reason
    assert cost.room(tiny, []) == 0
    for _ in range(10):
        cost.observe_cpu(0.2)
    assert cost.admit(tiny, []).ok


def test_cpu_sampler_sees_this_process_working():
    sampler = CpuSampler()
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert 0.0 < sampler.sample() <= 1.0 + 1e-6


def test_cpu_budget_saves_a_burst_then_pays_back_at_its_share():
    now = [64.0]
    budget = CpuBudget(0.1, clock=lambda: now[0])  # a tenth of a core, 25 ms saved
    assert budget.charge(0.02) == 0.0  # within the burst
    assert budget.charge(0.01) == pytest.approx(0.05)  # 5 ms overdrawn: 50 ms to earn it
    now[0] += 0.05  # paid back
    assert budget.charge(0.0002) == MIN_PAUSE_S  # a pause long enough to be worth waking
    now[0] += 10.0  # idle time saves no more than the burst
    assert budget.charge(0.025) == 0.0
    assert budget.charge(0.001) == pytest.approx(0.01)
