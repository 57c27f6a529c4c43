// scenarios under every driver
