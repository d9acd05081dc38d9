"""The ground floor: files and weights. Modules here import nothing else from vqkit."""
