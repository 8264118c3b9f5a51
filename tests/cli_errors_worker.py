"""Runs the CLI once per case in one process (imports paid once): `python cli_errors_worker.py`,
cases as JSON on stdin (lists of arguments after the program name); prints one JSON list of
{"code", "stderr", "stdout"} on its last line. Used by tests/test_train.py."""

import contextlib
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]
os.chdir(os.path.dirname(HERE))

from absl import flags  # noqa: E402

from jax_supcon.cli import main as cli  # noqa: E402

cli.define_flags()

results = []
for args in json.load(sys.stdin):
    flags.FLAGS.unparse_flags()
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
        delattr(flags.FLAGS, name)  # the previous case's overrides; config_flags defines them per parse
    sys.argv = ["jax-supcon", *args]  # config_flags finds the overrides in sys.argv
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            cli.main(cli.parse_flags(["jax-supcon", *args]))
        except SystemExit as exit_:
            code = exit_.code
        except Exception as error:  # noqa: BLE001 (reported, with its type, to the test)
            code, err = f"uncaught {type(error).__name__}", io.StringIO(str(error))
    results.append({"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
print(json.dumps(results))
