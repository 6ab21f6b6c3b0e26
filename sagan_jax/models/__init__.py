"""SAGAN generator, discriminator and their building blocks."""
