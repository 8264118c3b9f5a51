"""What a run shows a person: `report.md` (`markdown`), PNG pictures (`plots`: embedding maps,
training curves, augmentation grids; matplotlib and scikit-learn load with it) and console
progress (`progress`)."""
