"""`python -m jax_supcon.export`: the same command as its console script (code in `jax_supcon.cli.export`)."""

if __name__ == "__main__":
    from jax_supcon.cli.export import run

    run()
