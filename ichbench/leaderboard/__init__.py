"""The leaderboard: the paper's published rows, validated submissions, statistics and the page.

The top-level `leaderboard/` folder is data kept in git. Entries are parsed as JSON data only,
never imported or executed; validation re-scores each entry from its per-volume counts and checks
it against the canonical splits recorded in `canonical.json`.
"""

from ichbench.leaderboard.paths import Folder, default_root

__all__ = ["Folder", "default_root"]
