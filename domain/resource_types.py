"""Pulumi type tokens of the resources the policy pack and the tools read by name.

Tokens are pulumi-aws's (`aws:<module>/<camelName>:<Name>`, pulumi-aws schema); one home, so a
rule and a diagram cannot disagree on which resource they mean.
"""

BUCKET = "aws:s3/bucket:Bucket"
BUCKET_SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
)
DB_INSTANCE = "aws:rds/instance:Instance"
DB_CLUSTER = "aws:rds/cluster:Cluster"
SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105 - a type token
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
VOLUME = "aws:ebs/volume:Volume"
INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
KMS_KEY = "aws:kms/key:Key"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
ECS_SERVICE = "aws:ecs/service:Service"
VPC = "aws:ec2/vpc:Vpc"
VPC_CIDR_ASSOCIATION = "aws:ec2/vpcIpv4CidrBlockAssociation:VpcIpv4CidrBlockAssociation"
