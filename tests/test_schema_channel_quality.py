"""Channel quality in the database: an unusable channel (no counts, warnings) goes in through
``emgd.complete_job`` and comes back out of ``emgd.session_result`` as the same JSON; the
validation trigger's rules for the new fields; the per-contraction spectral slopes.

Results are built by hand from the ``emg_core.results`` dataclasses, not by the analysis, so these
tests pin the contract between the result and the schema on their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from emg_core.results import ChannelResult, Contraction, GameMetadata, SessionResult
from tests import dbutil

NAN = float("nan")
INF = float("inf")

DATA = b"not really a c3d, the functions never read it"
OPTIONS: dict = {}

GOOD = ChannelResult(
    name="CH1 Raw",
    sampling_rate=2000.0,
    unit="V",
    mvc_value=4.5e-4,
    mvc_threshold=3.375e-4,
    mvc_method="session_estimate",
    duration_threshold_ms=2000.0,
    expected_contractions=12,
    contractions_total=2,
    contractions_good=1,
    contractions_mvc_compliant=2,
    contractions_duration_compliant=1,
    completion_rate=2 / 12,
    intensity_rate=1.0,
    duration_rate=0.5,
    compliance_rate=1 / 12,
    time_under_tension_ms=3750.5,
    rms=1.25e-4,
    mav=9.5e-5,
    mpf_hz=92.5,
    mdf_hz=78.25,
    fi_nsm5=3.1e-13,
    fi_nsm5_relative=1.4,
    mpf_slope_hz_per_s=-0.35,
    mdf_slope_hz_per_s=-0.5,
    mpf_slope_pct_per_s=-0.38,
    mdf_slope_pct_per_s=-0.64,
    signal_quality=0.875,
    activation_agreement=None,
    usable=True,
    warnings=("mains hum at 49.5 Hz was removed", "0.2 s of artefact masked"),
    masked_samples=400,
    masked_s=0.2,
    mains_hz=49.5,
    mains_fraction=0.125,
    mains_removed=True,
    rest_level=4.0e-6,
    onset_level=2.4e-5,
    offset_level=1.2e-5,
    mvc_source="estimated: strongest 500 ms of this session",
    mvc_start_ms=6000.0,
    mvc_end_ms=6500.0,
    fatigue_reason=None,
    contractions=(
        Contraction(
            index=0,
            start_ms=5000.0,
            end_ms=7500.5,
            duration_ms=2500.5,
            peak_amplitude=4.5e-4,
            mean_amplitude=2.0e-4,
            meets_mvc=True,
            meets_duration=True,
            is_good=True,
            mpf_hz=95.0,
            mdf_hz=80.0,
            mpf_slope_hz_per_s=-1.25,
            mdf_slope_hz_per_s=-2.5,
        ),
        Contraction(
            index=1,
            start_ms=12000.0,
            end_ms=13250.0,
            duration_ms=1250.0,
            peak_amplitude=4.0e-4,
            mean_amplitude=1.5e-4,
            meets_mvc=True,
            meets_duration=False,
            is_good=False,
            mpf_hz=90.0,
            mdf_hz=77.0,
        ),  # too short for several spectral windows: no slopes
    ),
)

UNUSABLE = dataclasses.replace(
    GOOD,
    name="CH2 Raw",
    mvc_value=None,
    mvc_threshold=None,
    contractions_total=None,
    contractions_good=None,
    contractions_mvc_compliant=None,
    contractions_duration_compliant=None,
    completion_rate=None,
    intensity_rate=None,
    duration_rate=None,
    compliance_rate=None,
    time_under_tension_ms=None,
    mpf_hz=None,
    mdf_hz=None,
    fi_nsm5=None,
    fi_nsm5_relative=None,
    mpf_slope_hz_per_s=None,
    mdf_slope_hz_per_s=None,
    mpf_slope_pct_per_s=None,
    mdf_slope_pct_per_s=None,
    signal_quality=0.05,
    usable=False,
    warnings=("the electrode was off for most of the session: 61 % of it is artefact",),
    masked_samples=73200,
    masked_s=36.6,
    mains_hz=None,
    mains_fraction=0.0,
    mains_removed=False,
    rest_level=None,
    onset_level=None,
    offset_level=None,
    mvc_source=None,
    mvc_start_ms=None,
    mvc_end_ms=None,
    fatigue_reason="no usable contractions",
    contractions=(),
)

RESULT = SessionResult(
    file="rec.c3d",
    analysis_version="test-1",
    processing={"options": OPTIONS, "band_hz": [20, 450]},
    recorded_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    duration_s=60.0,
    metadata=GameMetadata(game_name="Ghostly", game_level=2),
    overall_compliance=1 / 12,
    symmetry=None,
    channels=(GOOD, UNUSABLE),
)


async def _claimed(conn, name: str = "rec.c3d"):
    patient = await dbutil.make_user(conn, "patient")
    return await dbutil.claimed_upload(conn, patient, name, DATA)


async def _complete(conn, job, result: dict) -> bool:
    return await dbutil.complete_job(conn, job, result, DATA)


async def _stored(conn, session_id) -> dict:
    return json.loads(await conn.fetchval("select emgd.session_result($1)", session_id))


# --- in and out through the job functions ----------------------------------------------------


async def test_an_unusable_channel_round_trips_through_complete_job_and_session_result(db):
    job = await _claimed(db)
    want = RESULT.to_dict()
    assert await _complete(db, job, want) is True

    got = await _stored(db, job["session_id"])
    # Every channel field comes back under its own name with its own value (warnings as a JSON
    # list, NULL counts as null); the only extra is the session's processing copied per row.
    assert [{k: v for k, v in c.items() if k != "processing"} for c in got["channels"]] == want[
        "channels"
    ]
    for key in ("analysis_version", "processing", "duration_s", "overall_compliance", "symmetry"):
        assert got[key] == want[key], key


async def test_the_rows_hold_typed_values_and_the_contraction_slopes(db):
    job = await _claimed(db)
    assert await _complete(db, job, RESULT.to_dict()) is True
    rows = {
        r["name"]: r
        for r in await db.fetch(
            "select * from public.session_parameters where session_id = $1", job["session_id"]
        )
    }
    bad = rows["CH2 Raw"]
    assert bad["usable"] is False
    assert bad["warnings"] == list(UNUSABLE.warnings)
    assert bad["contractions_total"] is None and bad["compliance_rate"] is None
    assert bad["masked_samples"] == 73200 and bad["masked_s"] == 36.6
    good = rows["CH1 Raw"]
    assert good["usable"] is True and good["warnings"] == list(GOOD.warnings)
    assert (good["mains_hz"], good["mains_fraction"], good["mains_removed"]) == (49.5, 0.125, True)
    assert (good["rest_level"], good["offset_level"], good["onset_level"]) == (4e-6, 1.2e-5, 2.4e-5)
    assert (good["mvc_start_ms"], good["mvc_end_ms"]) == (6000.0, 6500.0)
    slopes = await db.fetch(
        "select mpf_slope_hz_per_s, mdf_slope_hz_per_s from public.contractions"
        " where session_id = $1 order by channel, contraction_index",
        job["session_id"],
    )
    assert [tuple(r) for r in slopes] == [(-1.25, -2.5), (None, None)]


async def test_a_result_without_the_new_fields_gets_their_defaults(db):
    # A daemon of the previous version finishing a job during an upgrade sends none of them.
    new = {f.name for f in dataclasses.fields(ChannelResult)} - {
        "name", "sampling_rate", "unit", "mvc_value", "mvc_threshold", "mvc_method",
        "duration_threshold_ms", "expected_contractions", "contractions_total",
        "contractions_good", "contractions_mvc_compliant", "contractions_duration_compliant",
        "completion_rate", "intensity_rate", "duration_rate", "compliance_rate",
        "time_under_tension_ms", "rms", "mav", "mpf_hz", "mdf_hz", "fi_nsm5", "fi_nsm5_relative",
        "mpf_slope_hz_per_s", "mdf_slope_hz_per_s", "mpf_slope_pct_per_s", "mdf_slope_pct_per_s",
        "signal_quality", "activation_agreement", "contractions",
    }  # fmt: skip
    old = RESULT.to_dict()
    old["channels"] = [{k: v for k, v in old["channels"][0].items() if k not in new}]
    for c in old["channels"][0]["contractions"]:
        del c["mpf_slope_hz_per_s"], c["mdf_slope_hz_per_s"]
    job = await _claimed(db)
    assert await _complete(db, job, old) is True
    row = await db.fetchrow(
        "select usable, warnings, masked_samples, masked_s, mains_fraction, mains_removed,"
        " mains_hz, rest_level, mvc_source from public.session_parameters where session_id = $1",
        job["session_id"],
    )
    assert tuple(row) == (True, [], 0, 0.0, 0.0, False, None, None, None)


async def test_a_usable_channel_without_counts_fails_the_commit_and_writes_nothing(db):
    job = await _claimed(db)
    broken = dataclasses.replace(UNUSABLE, usable=True)
    bad = dataclasses.replace(RESULT, channels=(GOOD, broken)).to_dict()
    with pytest.raises(asyncpg.CheckViolationError, match="a usable channel must have mvc_value"):
        await _complete(db, job, bad)
    assert (
        await db.fetchval(
            "select count(*) from public.session_parameters where session_id = $1",
            job["session_id"],
        )
        == 0
    )
    assert await db.fetchval("select state from emgd.jobs where id = $1", job["job_id"]) == (
        "running"
    )


async def test_reprocess_all_analyses_sessions_of_an_older_version_afresh(db):
    # Stored results of an older ANALYSIS_VERSION are requeued by reprocess_all, and the reuse
    # check then finds nothing of the current version, so the daemon analyses the file again.
    job = await _claimed(db)
    old = dataclasses.replace(RESULT, analysis_version="old").to_dict()
    assert await _complete(db, job, old) is True
    assert await db.fetchval("select emgd.reprocess_all()") == 1
    again = await db.fetchrow("select * from emgd.claim_jobs($1, 1, 30)", uuid.uuid4())
    assert again["session_id"] == job["session_id"]

    async def reuse_or_stage(version: str) -> str:
        return await db.fetchval(
            "select emgd.reuse_or_stage($1, $2, $3, $4, $5, $6::jsonb, 'analysing')",
            again["job_id"],
            again["lease_token"],
            hashlib.sha256(DATA).hexdigest(),
            len(DATA),
            version,
            json.dumps(OPTIONS),
        )

    assert await reuse_or_stage("new") == "staged"
    # the same version would have been reused: the version is what forces the new analysis
    assert await reuse_or_stage("old") == "reused"


# --- the validation trigger --------------------------------------------------------------------


@pytest.fixture
async def session_id(db):
    patient = await dbutil.make_user(db, "patient")
    return await dbutil.make_session(db, patient)


COUNTS = [
    "mvc_value",
    "mvc_threshold",
    "contractions_total",
    "contractions_good",
    "contractions_mvc_compliant",
    "contractions_duration_compliant",
    "completion_rate",
    "intensity_rate",
    "duration_rate",
    "compliance_rate",
    "time_under_tension_ms",
]
NO_COUNTS = dict.fromkeys(COUNTS, None)


async def _insert(db, session_id, name: str = "CH1", **overrides):
    return await dbutil.insert_row(
        db, "public.session_parameters", dbutil.parameter_row(session_id, name, **overrides)
    )


async def test_new_fields_within_their_rules_are_accepted(db, session_id):
    await _insert(db, session_id, "unusable", usable=False, warnings=["too noisy"], **NO_COUNTS)
    await _insert(
        db,
        session_id,
        "equal levels",
        rest_level=0.0,
        offset_level=0.0,
        onset_level=0.0,
        mains_fraction=1.0,
        mains_hz=60.0,
        masked_s=0.0,
    )
    await _insert(db, session_id, "some levels", onset_level=2.0, rest_level=1.0)
    await _insert(db, session_id, "mvc window", mvc_start_ms=0.0, mvc_end_ms=500.0)
    # an unusable channel may still carry whatever counts it has
    await _insert(db, session_id, "unusable with counts", usable=False, warnings=["dropouts"])


@pytest.mark.parametrize("column", COUNTS)
async def test_a_usable_channel_must_have_every_count(db, session_id, column):
    with pytest.raises(asyncpg.CheckViolationError, match=f"a usable channel must have {column}"):
        await _insert(db, session_id, **{column: None})


async def test_the_refusal_names_every_missing_count(db, session_id):
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await _insert(db, session_id, **NO_COUNTS)
    assert f"a usable channel must have {', '.join(COUNTS)}" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"usable": False, "warnings": []}, "an unusable channel must have at least one warning"),
        ({"usable": False}, "an unusable channel must have at least one warning"),
        ({"warnings": ["fine", ""]}, "warnings must not be empty or NULL"),
        ({"warnings": ["  "]}, "warnings must not be empty or NULL"),
        ({"warnings": [None]}, "warnings must not be empty or NULL"),
        ({"masked_samples": -1}, "masked_samples must be >= 0 and finite, got -1"),
        ({"masked_s": -0.5}, "masked_s must be >= 0 and finite, got -0.5"),
        ({"masked_s": INF}, "masked_s must be >= 0 and finite, got Infinity"),
        ({"masked_s": NAN}, "masked_s must be >= 0 and finite, got NaN"),
        ({"mains_fraction": 1.5}, "mains_fraction must be between 0 and 1, got 1.5"),
        ({"mains_fraction": -0.1}, "mains_fraction must be between 0 and 1"),
        ({"mains_fraction": NAN}, "mains_fraction must be between 0 and 1, got NaN"),
        ({"mains_hz": 0.0}, "mains_hz must be > 0 and finite, got 0"),
        ({"mains_hz": INF}, "mains_hz must be > 0 and finite, got Infinity"),
        ({"rest_level": -1e-6}, "rest_level must be >= 0 and finite"),
        ({"onset_level": INF}, "onset_level must be >= 0 and finite, got Infinity"),
        ({"offset_level": NAN}, "offset_level must be >= 0 and finite, got NaN"),
        (
            {"rest_level": 1.0, "offset_level": 3.0, "onset_level": 2.0},
            "levels must satisfy onset_level (2) >= offset_level (3) >= rest_level (1)",
        ),
        (
            {"rest_level": 2.5, "offset_level": 2.0, "onset_level": 3.0},
            "levels must satisfy onset_level (3) >= offset_level (2) >= rest_level (2.5)",
        ),
        ({"rest_level": 2.0, "onset_level": 1.0}, "levels must satisfy onset_level (1)"),
        ({"mvc_start_ms": -1.0}, "mvc_start_ms must be >= 0"),
        ({"mvc_end_ms": NAN}, "mvc_end_ms must be >= 0 and finite"),
        (
            {"mvc_start_ms": 500.0, "mvc_end_ms": 500.0},
            "mvc_end_ms (500) must be greater than mvc_start_ms (500)",
        ),
        # the rules that held before still hold with NULL counts elsewhere in the row
        ({"usable": False, "warnings": ["x"], "rms": -1.0}, "rms must be >= 0"),
        (
            {"usable": False, "warnings": ["x"], "contractions_total": 1, "contractions_good": 2},
            "cannot exceed contractions_total (1)",
        ),
    ],
)
async def test_bad_new_fields_are_rejected(db, session_id, overrides, message):
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await _insert(db, session_id, **overrides)
    assert str(err.value).startswith("session_parameters: ")
    assert message in str(err.value)


@pytest.mark.parametrize("column", ["usable", "warnings", "masked_samples", "mains_fraction"])
async def test_the_fields_every_result_has_are_not_null(db, session_id, column):
    extra = {"warnings": ["x"]} if column == "usable" else {}
    with pytest.raises(asyncpg.NotNullViolationError, match=column):
        await _insert(db, session_id, **{column: None, **extra})


async def test_updates_to_unusable_without_a_warning_are_rejected(db, session_id):
    pid = await _insert(db, session_id)
    with pytest.raises(asyncpg.CheckViolationError, match="at least one warning"):
        await db.execute("update public.session_parameters set usable = false where id = $1", pid)


@pytest.mark.parametrize("column", ["mpf_slope_hz_per_s", "mdf_slope_hz_per_s"])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
async def test_contraction_slopes_must_be_finite(db, session_id, column, value):
    with pytest.raises(asyncpg.CheckViolationError, match=f"{column} must be a finite number"):
        await dbutil.insert_row(
            db, "public.contractions", dbutil.contraction_row(session_id, **{column: value})
        )


async def test_contraction_slopes_may_be_negative_or_null(db, session_id):
    await dbutil.insert_row(
        db,
        "public.contractions",
        dbutil.contraction_row(session_id, mpf_slope_hz_per_s=-3.0, mdf_slope_hz_per_s=None),
    )
