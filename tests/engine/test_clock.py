"""The virtual clock: hand-computed times, deadlines, availability, drawn and traced profiles."""

import json
import math

import numpy as np
import pytest

import fedloom as fl
from fedloom.client import LocalTraining
from fedloom.engine import (
    Availability,
    ClientProfile,
    LogNormal,
    VirtualClock,
    draw_profiles,
    load_trace,
)
from fedloom.engine.clock import client_timing, round_timing
from fedloom.errors import ConfigError


def _time(profile, start_s=10.0, examples=300, down=2000, up=2000):
    return client_timing(
        profile, client_id=0, start_s=start_s, examples=examples, down_bytes=down, up_bytes=up
    )


def test_finish_is_download_plus_compute_plus_upload():
    t = _time(ClientProfile(speed=100.0, down_bps=1000.0, up_bps=500.0))
    # 2000 B / 1000 B/s + 300 ex / 100 ex/s + 2000 B / 500 B/s = 2 + 3 + 4
    assert (t.download_s, t.compute_s, t.upload_s) == (2.0, 3.0, 4.0)
    assert t.begin_s == 10.0 and t.finish_s == 19.0 and t.completed


def test_an_offline_client_starts_at_its_next_window_and_must_finish_inside_it():
    p = ClientProfile(100.0, 1000.0, 500.0, windows=((5.0, 8.0), (50.0, 100.0)))
    t = _time(p)  # 10 s falls between the windows: begins at 50
    assert t.begin_s == 50.0 and t.finish_s == 59.0
    inside = _time(p, start_s=60.0)
    assert inside.begin_s == 60.0 and inside.finish_s == 69.0
    late = _time(p, start_s=95.0)  # would finish at 104, the window closes at 100
    assert not late.completed and late.offline_s == 100.0 and math.isinf(late.finish_s)
    gone = _time(p, start_s=100.0)  # after the last window of a one-off trace
    assert not gone.completed and gone.offline_s == 100.0 and math.isinf(gone.begin_s)


def test_periodic_windows_repeat():
    p = ClientProfile(100.0, 1000.0, 500.0, windows=((20.0, 40.0),), period_s=100.0)
    assert _time(p, start_s=45.0).begin_s == 120.0  # next repetition
    assert _time(p, start_s=125.0).finish_s == 134.0
    assert _time(p, start_s=135.0).offline_s == 140.0  # 144 > 140
    assert _time(p, start_s=1010.0).begin_s == 1020.0
    assert p.online_window(30.0) == (20.0, 40.0)
    assert p.online_window(-85.0) == (-80.0, -60.0)


def _timings(finishes, start_s=100.0):
    p = ClientProfile(1.0, 1e12, 1e12)  # compute only: finish = start + examples
    return [
        client_timing(p, client_id=i, start_s=start_s, examples=f, down_bytes=0, up_bytes=0)
        for i, f in enumerate(finishes)
    ]


def test_a_round_waits_for_its_slowest_client_or_closes_at_the_deadline():
    timings = _timings([5.0, 10.0, 10.5])
    open_ended = round_timing(timings, start_s=100.0, deadline_s=None)
    assert open_ended.end_s == 110.5 and open_ended.missed == () and open_ended.on_time == (0, 1, 2)
    closed = round_timing(timings, start_s=100.0, deadline_s=10.0)
    assert closed.on_time == (0, 1) and closed.missed == (2,)  # arriving at the deadline counts
    assert closed.end_s == 110.0
    early = round_timing(timings, start_s=100.0, deadline_s=20.0)
    assert early.end_s == 110.5 and early.missed == ()  # everyone in: no need to wait
    assert round_timing([], start_s=7.0, deadline_s=3.0).end_s == 7.0


def test_deadline_misses_are_exactly_the_clients_finishing_after_it():
    rng = np.random.default_rng(0)
    speeds, downs, ups = rng.lognormal(3, 1, 50), rng.lognormal(10, 1, 50), rng.lognormal(9, 1, 50)
    examples = rng.integers(10, 500, 50)
    profiles = [
        ClientProfile(float(s), float(d), float(u))
        for s, d, u in zip(speeds, downs, ups, strict=True)
    ]
    timings = [
        client_timing(p, client_id=k, start_s=3.0, examples=int(e), down_bytes=8e4, up_bytes=8e4)
        for k, (p, e) in enumerate(zip(profiles, examples, strict=True))
    ]
    finish = 3.0 + 8e4 / downs + examples / speeds + 8e4 / ups  # by hand, in float64
    np.testing.assert_allclose([t.finish_s for t in timings], finish, rtol=1e-12)
    deadline = float(np.median(finish - 3.0))
    timing = round_timing(timings, start_s=3.0, deadline_s=deadline)
    assert set(timing.missed) == {k for k in range(50) if finish[k] > 3.0 + deadline}
    assert len(timing.missed) == 25 and timing.end_s == 3.0 + deadline


def test_drawn_profiles_are_seeded_log_normal():
    kw = dict(speed=LogNormal(50.0, 1.0), down_bps=LogNormal(1e6, 0.5), up_bps=LogNormal(2e5))
    a = draw_profiles(4001, seed=3, **kw)
    assert a == draw_profiles(4001, seed=3, **kw) and a != draw_profiles(4001, seed=4, **kw)
    logs = np.log([p.speed for p in a])
    assert abs(np.median(logs) - math.log(50.0)) < 0.05 and abs(logs.std() - 1.0) < 0.05
    assert {p.up_bps for p in a} == {2e5}  # sigma 0: constant
    # each field has its own stream: a new up-link spread leaves the speeds as they were
    other = draw_profiles(4001, seed=3, **{**kw, "up_bps": LogNormal(1e5, 2.0)})
    assert [p.speed for p in other] == [p.speed for p in a]


def test_drawn_availability_is_a_daily_window_of_the_given_share():
    profiles = draw_profiles(
        200, speed=LogNormal(1.0), down_bps=LogNormal(1.0), up_bps=LogNormal(1.0),
        availability=Availability(period_s=100.0, fraction=0.25), seed=0,
    )  # fmt: skip
    for p in profiles:
        ((start, end),) = p.windows
        assert p.period_s == 100.0 and 0 <= start < 100 and end - start == pytest.approx(25.0)
    starts = [p.windows[0][0] for p in profiles]
    assert min(starts) < 10 and max(starts) > 90  # phases spread over the period


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(speed=-1.0), "speed"),
        (dict(down_bps=0.0), "down_bps"),
        (dict(up_bps=math.inf), "up_bps"),
        (dict(windows=((0.0, 10.0), (5.0, 20.0))), "overlaps"),
        (dict(windows=((30.0, 40.0), (0.0, 10.0))), "sorted"),
        (dict(windows=((10.0, 5.0),)), "end must be after start"),
        (dict(windows=((0.0, 60.0),), period_s=50.0), "period_s"),
    ],
)
def test_bad_profiles_are_rejected_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ClientProfile(**{"speed": 1.0, "down_bps": 1.0, "up_bps": 1.0, **kwargs})


def test_traces_load_from_csv_and_json(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(
        "client,speed,down_bps,up_bps,windows\n0,120.5,1e6,2.5e5,0-3600;7200-9000\n1,40,5e5,1e5,\n"
    )
    a, b = load_trace(csv)
    assert a == ClientProfile(120.5, 1e6, 2.5e5, ((0.0, 3600.0), (7200.0, 9000.0)))
    assert b == ClientProfile(40.0, 5e5, 1e5)
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"period_s": 100, "clients": [
        {"speed": 2, "down_bps": 3, "up_bps": 4, "windows": [[10, 20]]},
        {"speed": 5, "down_bps": 6, "up_bps": 7},
    ]}))  # fmt: skip
    c, d = load_trace(js, num_clients=2)
    assert c == ClientProfile(2.0, 3.0, 4.0, ((10.0, 20.0),), period_s=100.0)
    assert d == ClientProfile(5.0, 6.0, 7.0)
    with pytest.raises(ConfigError, match="describes 2 clients, the run has 3"):
        load_trace(js, num_clients=3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("speed,down_bps,up_bps\n1,2,3\n-5,2,3\n", "line 3: speed must be a finite number > 0"),
        ("speed,down_bps,up_bps\n1,abc,3\n", "line 2: down_bps must be a number"),
        ("speed,down_bps\n1,2\n", "line 1: the header lacks up_bps"),
        ("speed,down_bps,up_bps,windows\n1,2,3,0-10;5-20\n", r"line 2: windows\[1\].*overlaps"),
        ("speed,down_bps,up_bps,windows\n1,2,3,30-40;0-10\n", r"line 2: windows\[1\].*sorted"),
        ("speed,down_bps,up_bps,windows\n1,2,3,0:10\n", "line 2: windows must be start-end"),
        ("client,speed,down_bps,up_bps\n1,1,2,3\n", "line 2: client must be 0"),
        ("speed,down_bps,up_bps\n1,,3\n", "line 2: down_bps is missing"),
    ],
)
def test_bad_csv_traces_name_the_line_and_field(tmp_path, text, message):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_trace(path)


@pytest.mark.parametrize(
    "raw, message",
    [
        ([{"speed": 1, "down_bps": 2, "up_bps": 3}, {"speed": -1, "down_bps": 2, "up_bps": 3}],
         r"clients\[1\]: speed must be a finite number > 0"),
        ([{"speed": 1, "down_bps": 2, "up_bps": 3, "windows": [[0, 10], [5, 20]]}],
         r"clients\[0\]: windows\[1\].*overlaps"),
        ([{"speed": 1, "down_bps": 2, "up_bps": 3, "windows": [[0, "x"]]}],
         r"clients\[0\]: windows must be a list of \[start, end\]"),
        ({"period_s": -1, "clients": []}, "period_s must be a finite number > 0"),
        ({"people": []}, "expected a list of clients"),
    ],
)  # fmt: skip
def test_bad_json_traces_name_the_client_and_field(tmp_path, raw, message):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        load_trace(path)


def test_simulated_rounds_take_the_hand_computed_time(digits):
    """Full-batch, one epoch: each client passes its n_k examples once, so its round time is
    2 * model bytes / bandwidth + n_k / speed; the round takes its slowest client's."""
    data = fl.federate(digits, lambda ds, rng: fl.partition.iid(ds.num_train, 6, rng=rng), seed=0)
    speeds = [100.0, 50.0, 200.0, 10.0, 80.0, 40.0]
    clock = VirtualClock(tuple(ClientProfile(s, 1e6, 5e5) for s in speeds))
    local = LocalTraining(epochs=1, batch_size=None, lr=0.1)
    kw = dict(rounds=3, fraction=0.5, local=local, engine="sequential", eval_clients=False)
    history = fl.simulate(fl.fedavg(), data, fl.models.digits_mlp, clock=clock, **kw)
    size = 4 * history.final_state.params.numel()  # no buffers in the MLP
    sizes = data.client_sizes
    expected, now = [], 0.0
    for t in range(3):
        cohort = [p.client_id for p in fl.engine.plans_for_round(6, 0.5, seed=0, round=t)]
        now += max(size / 1e6 + sizes[k] / speeds[k] + size / 5e5 for k in cohort)
        expected.append(now)
    assert history.metric("sim_time_s") == pytest.approx(expected, rel=1e-12)
    assert history.metric("num_deadline_misses") == [0.0, 0.0, 0.0]
    # a deadline between the slowest and the second slowest client of round 1 drops exactly one
    cohort = [p.client_id for p in fl.engine.plans_for_round(6, 0.5, seed=0, round=0)]
    times = sorted(size / 1e6 + sizes[k] / speeds[k] + size / 5e5 for k in cohort)
    deadline = (times[-1] + times[-2]) / 2
    timed = fl.simulate(
        fl.fedavg(), data, fl.models.digits_mlp, clock=VirtualClock(clock.profiles, deadline),
        **{**kw, "rounds": 1},
    )  # fmt: skip
    (report,) = timed.reports
    assert report.metrics["num_deadline_misses"] == 1.0
    assert report.metrics["num_results"] == 2.0 and report.metrics["num_failures"] == 1.0
    assert report.metrics["sim_time_s"] == pytest.approx(deadline)
    untimed = fl.simulate(fl.fedavg(), data, fl.models.digits_mlp, **{**kw, "rounds": 1})
    assert "sim_time_s" not in untimed.reports[0].metrics  # off by default: metrics as before


def test_each_client_can_upload_its_own_number_of_bytes():
    import torch

    from fedloom.engine.clock import apply_clock
    from fedloom.types import ClientResult

    def result(k):
        return ClientResult(k, torch.zeros(1), torch.zeros(0), 1, 1, 3, 0.0)

    p = ClientProfile(speed=1.0, down_bps=1.0, up_bps=2.0)
    clock = VirtualClock((p, p), deadline_s=5.5)
    # 1 B down (1 s) + 3 examples (3 s) + 2 or 4 B up (1 or 2 s): 5 s and 6 s
    kept, late, timing = apply_clock(
        clock, [result(0), result(1)], start_s=0.0, down_bytes=1.0, up_bytes={0: 2.0, 1: 4.0}
    )
    assert [r.client_id for r in kept] == [0] and [f.client_id for f in late] == [1]
    assert "missed the round deadline" in late[0].reason and timing.end_s == 5.5
