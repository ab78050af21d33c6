from __future__ import annotations

import pytest
from bicep_template import MAIN_BICEP, Template, parse_bicep


@pytest.fixture(scope="session")
def template() -> Template:
    return Template(parse_bicep(MAIN_BICEP))
