"""A PyTorch reference of openai/DALL-E's encoder for the tests, importable as `dall_e` like the original
package, so that a module pickled from it has the published `encoder.pkl` layout."""
