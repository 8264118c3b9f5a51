"""`python -m jax_supcon.main`: the same command as its console script (code in `jax_supcon.cli.main`)."""

if __name__ == "__main__":
    from jax_supcon.cli import main_command

    main_command()
