import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings  # noqa: E402

# No per-example deadline: on a loaded 2-core box one example can take longer than
# hypothesis's 200 ms default, which would fail a correct test.
settings.register_profile("project", deadline=None)
settings.load_profile("project")
