"""`python -m jax_supcon.sweep`: the same command as its console script (code in `jax_supcon.cli.sweep`)."""

if __name__ == "__main__":
    from jax_supcon.cli.sweep import run

    run()
