"""Several confd instances on one PostgreSQL and one RabbitMQ (cluster.md).

Off unless ``cluster.instance`` is set; single-instance mode never imports this package.

* ``names``   the lock keys, application name, exchanges and queues (pure);
* ``wire``    live conferences and requests as JSON between instances (pure);
* ``spread``  which nodes an instance claims or hands over (pure);
* ``claims``  node ownership: advisory locks on this instance's own database session;
* ``nodes``   the node connections this instance holds while it owns them;
* ``bus``     RabbitMQ: request/reply between instances, and the events queue;
* ``control`` "read this conference" / "send this command to its focus" across instances;
* ``events``  the owners' events to every instance's websocket clients (bindings follow
  subscriptions);
* ``service`` the whole, as the daemon wires it in.
"""
