"""`python -m jax_supcon.preview`: the same command as its console script (code in `jax_supcon.cli.preview`)."""

if __name__ == "__main__":
    from jax_supcon.cli.preview import run

    run()
