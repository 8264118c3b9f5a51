"""`python -m jax_supcon.bench`: the same command as its console script (code in `jax_supcon.cli.bench`)."""

if __name__ == "__main__":
    from jax_supcon.cli.bench import run

    run()
