"""`python -m jax_supcon.search`: the same command as its console script (code in `jax_supcon.cli.search`)."""

if __name__ == "__main__":
    from jax_supcon.cli.search import run

    run()
