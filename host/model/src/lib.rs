//! Model providers behind one trait: AWS Bedrock Converse / ConverseStream first
