"""Ray plumbing shared by every stage that spreads work over a cluster.

``address`` parses ``--address`` and checks with plain sockets that a head
answers (before Ray is imported, and while a run goes on); ``session``
joins or starts Ray, maps its failures to one ``ClusterError`` and starts
the C3D feature actors that ``phd dataset build`` and ``phd suggest``
(``--engine ray``) both use. ``ray`` itself is imported only in
``session``, and only when an engine asks for it.
"""
