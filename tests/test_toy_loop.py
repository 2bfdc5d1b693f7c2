from hspace.toyworld.loop import StepClock


def test_clock_reports_saves_and_stops_on_schedule():
    clock = StepClock(steps=10, log_every=4, checkpoint_every=3)
    seen = [clock.after_step(step, 8) for step in range(1, 11)]
    assert [i + 1 for i, (rate, _, _) in enumerate(seen) if rate is not None] == [4, 8, 10]
    assert [i + 1 for i, (_, save, _) in enumerate(seen) if save] == [3, 6, 9, 10]
    assert [i + 1 for i, (_, _, stop) in enumerate(seen) if stop] == [10]
    assert clock.run_steps == 10 and clock.per_second(8) > 0


def test_clock_stops_after_this_runs_steps_and_saves_there():
    clock = StepClock(steps=100, log_every=50, checkpoint_every=50, stop_after=2)
    assert clock.after_step(41, 1)[1:] == (False, False)  # resumed run: step counts continue
    assert clock.after_step(42, 1)[1:] == (True, True)


def test_clock_time_limit():
    clock = StepClock(steps=100, log_every=50, checkpoint_every=50, max_minutes=0.0)
    assert clock.after_step(1, 1)[1:] == (True, True)
