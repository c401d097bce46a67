"""The errors a user can cause, and the exit statuses they end in, in a module with no heavy
imports (the CLI needs them first).

The exit statuses below are the same in every command (README "Exit status" is the one
table of them).
"""


class ConfigError(ValueError):
    """A setting cannot be used (bad base URL, missing key, bad config file): the message
    says how to fix it. Ends in EXIT_CANNOT_START."""


class StoreError(Exception):
    """The database cannot be used: the message says what and what to do."""


#: Everything asked for was done.
EXIT_OK = 0
#: It ran, but not everything succeeded: a job failed, was refused by pre-flight, waits for
#: credits or has an unknown outcome; a bad line of the job file was skipped; ``estimate
#: --balance`` refuses.
EXIT_JOBS_FAILED = 1
#: Bad usage: an unknown flag or a bad flag value, a bad job file under ``--strict``, a job
#: file with no valid job, bad ``estimate`` input. Nothing was started.
EXIT_USAGE = 2
#: Could not start: bad settings (config file, environment, base URL, missing key), a file
#: that cannot be read or written (job file, recording, debug log), a database in use, foreign
#: or damaged, a port in use.
EXIT_CANNOT_START = 3
#: Interrupted (Ctrl-C / SIGTERM) before the work was done; what finished is saved.
EXIT_INTERRUPTED = 130
