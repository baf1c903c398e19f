"""Scale-out over Redis: many gateway processes and machines acting as one gateway.

One module per job: :mod:`.link` keeps the Redis connection and the subscription alive,
:mod:`.directory` knows which instance holds each token, :mod:`.router` carries sends to the
instance that holds their token and brings back its answer, :mod:`.channels` publishes channel
events with their ids and history, and :mod:`.broker` puts them together behind the
:class:`~tornado_sse.broker.Broker` seam. Needs the ``redis`` extra.
"""
