"""serve-check is a use case (issue 22): the CLI's flags build one typed request, validated once; a dashboard
job can run it from its stored JSON. The engine run itself is covered in tests/test_serving_vllm.py."""

import pytest

from pruning.errors import TicketLabError
from usecases import request_from_json
from usecases.serve_check import ServeCheckRequest


def test_the_request_round_trips_through_json_and_its_argv():
    r = ServeCheckRequest.build(bundle="b", base_url="http://h:8000", with_dense=False, rounds=1)
    assert request_from_json("serve-check", r.model_dump()) == r
    assert r.argv() == ["serve-check", "b", "--base-url", "http://h:8000", "--rounds", "1", "--no-dense"]


@pytest.mark.parametrize("field, value", [("rounds", 0), ("max_tokens", 0), ("port", 70000), ("startup_timeout", 0)])
def test_a_bad_setting_is_one_line_naming_it_before_anything_starts(field, value):
    with pytest.raises(TicketLabError, match=f"^{field}: "):
        ServeCheckRequest.build(bundle="b", **{field: value})
