"""The offline stack: Atelier's own ``template.yaml`` running on moto, on 127.0.0.1.

``template``  loads and translates the SAM template into plain CloudFormation for moto.
``stack``     runs moto in-process, deploys the template, runs Lambda handlers in-process.
``gateway``   serves the template's HTTP API routes as API Gateway payload-2.0 events.
"""
