"""What every command line shares: exit statuses and how usage errors end."""

from __future__ import annotations

import sys

# Exit statuses: 0 done; 1 the command ran but some input (a study) was refused
# or failed; 2 a usage error (bad flag, config or path): nothing was done.
EXIT_REFUSED = 1
EXIT_USAGE = 2


def exit_usage(error) -> None:
  """Ends the command with a one-line message on stderr and status 2, no
  traceback: the user has something to fix, not a bug to report."""
  message = str(error).strip().splitlines()
  print(f"error: {' '.join(m.strip() for m in message)}", file=sys.stderr)
  sys.exit(EXIT_USAGE)
