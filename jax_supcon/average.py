"""`python -m jax_supcon.average`: the same command as its console script (code in `jax_supcon.cli.average`)."""

if __name__ == "__main__":
    from jax_supcon.cli.average import run

    run()
