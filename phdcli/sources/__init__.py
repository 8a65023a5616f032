"""Where videos come from: the user's inputs as local files.

``inputs`` expands folders and resolves each input (a path as it is, a URL
downloaded once into the cache); ``worker`` runs yt-dlp (``ytdlp``) in a
watched child process under the limits of ``options``; ``heatmap`` reads a
site's "most replayed" data. Above ``media`` (a download must probe as a
video before it is cached).
"""
